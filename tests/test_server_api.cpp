// The HTTP API's parsing and encoding apart from any server: request bodies to ImageRequests (or
// 400s naming the field), base64, job names, the API-key comparison, the metrics text.
#include <gtest/gtest.h>

#include "cm/image_io.h"
#include "server/http_api.h"
#include "server/metrics.h"

namespace cm::server {
namespace {

ModelInfo fmnist() {
  ModelInfo m;
  m.id = "fmnist";
  m.sample_size = 28;
  m.channels = 1;
  m.num_classes = 10;
  m.class_names = {"tshirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt",   "sneaker",  "bag",   "boot"};
  m.num_train_timesteps = 40;
  return m;
}

// The field a body is refused for ("accepted" when it is not).
std::string refused_field(const std::string& body, const ModelInfo& m = fmnist()) {
  try {
    parse_generation(body, m, 8);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.message.rfind(e.param + ": ", 0), 0u) << e.message;  // the message names it
    return e.param;
  }
  return "accepted";
}

TEST(ServerApi, PromptNamesAClassByNameOrNumber) {
  EXPECT_EQ(parse_generation(R"({"prompt": "sneaker"})", fmnist(), 8).request.class_labels,
            std::vector<int64_t>{7});
  EXPECT_EQ(parse_generation(R"({"prompt": "Sneaker"})", fmnist(), 8).request.class_labels,
            std::vector<int64_t>{7});
  EXPECT_EQ(parse_generation(R"({"prompt": "3"})", fmnist(), 8).request.class_labels,
            std::vector<int64_t>{3});
  // Empty or absent: random classes following the seed, as cm generate draws them.
  EXPECT_TRUE(parse_generation(R"({"prompt": ""})", fmnist(), 8).request.class_labels.empty());
  EXPECT_TRUE(parse_generation("{}", fmnist(), 8).request.class_labels.empty());
  EXPECT_EQ(refused_field(R"({"prompt": "unicorn"})"), "prompt");
  EXPECT_EQ(refused_field(R"({"prompt": "10"})"), "prompt");
  EXPECT_EQ(refused_field(R"({"prompt": "-1"})"), "prompt");
  EXPECT_EQ(refused_field(R"({"prompt": 3})"), "prompt");
}

TEST(ServerApi, FieldsAndExtensions) {
  const auto r = parse_generation(
      R"({"n": 2, "seed": 9223372036854775807, "timesteps": [22, 0], "class_labels": [1, 9],
          "response_format": "b64_json", "output_format": "png", "size": "28x28",
          "model": "fmnist", "user": "me"})",
      fmnist(), 8);
  EXPECT_EQ(r.request.n, 2);
  EXPECT_EQ(r.request.seed, 9223372036854775807ull);
  EXPECT_EQ(r.request.timesteps, (std::vector<int64_t>{22, 0}));
  EXPECT_EQ(r.request.class_labels, (std::vector<int64_t>{1, 9}));
  EXPECT_EQ(
      parse_generation(R"({"steps": 40, "class_labels": 4})", fmnist(), 8).request.class_labels,
      std::vector<int64_t>{4});
  EXPECT_EQ(parse_generation(R"({"steps": 40})", fmnist(), 8).request.num_inference_steps, 40);
  EXPECT_EQ(parse_generation(R"({"n": null})", fmnist(), 8).request.n, 1);  // null = absent
}

TEST(ServerApi, RefusalsNameTheField) {
  EXPECT_EQ(refused_field("{"), "body");
  EXPECT_EQ(refused_field("\"text\""), "body");
  EXPECT_EQ(refused_field(R"({"quality": "hd"})"), "quality");
  EXPECT_EQ(refused_field(R"({"n": 9})"), "n");
  EXPECT_EQ(refused_field(R"({"n": 1.5})"), "n");
  EXPECT_EQ(refused_field(R"({"n": true})"), "n");
  EXPECT_EQ(refused_field(R"({"seed": 9223372036854775808})"), "seed");
  EXPECT_EQ(refused_field(R"({"seed": 18446744073709551615})"), "seed");
  EXPECT_EQ(refused_field(R"({"steps": 2, "timesteps": [1, 0]})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": []})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": [5, 5]})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": [-1]})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"timesteps": "22,0"})"), "timesteps");
  EXPECT_EQ(refused_field(R"({"class_labels": [10]})"), "class_labels");
  EXPECT_EQ(refused_field(R"({"class_labels": []})"), "class_labels");
  EXPECT_EQ(refused_field(R"({"class_labels": [1], "prompt": "bag"})"), "class_labels");
  EXPECT_EQ(refused_field(R"({"output_format": "jpeg"})"), "output_format");
  EXPECT_EQ(refused_field(R"({"size": "32x32"})"), "size");
  EXPECT_EQ(refused_field(R"({"model": "other"})"), "model");
  EXPECT_EQ(refused_field(R"({"user": 5})"), "user");
  ModelInfo uncond = fmnist();
  uncond.num_classes.reset();
  EXPECT_EQ(refused_field(R"({"prompt": "bag"})", uncond), "prompt");
  EXPECT_EQ(refused_field(R"({"class_labels": [1]})", uncond), "class_labels");
  EXPECT_EQ(refused_field(R"({"prompt": ""})", uncond), "accepted");
}

TEST(ServerApi, Base64JobNamesAndSecrets) {
  auto b64 = [](const std::string& s) {
    return base64_encode(std::vector<uint8_t>(s.begin(), s.end()));
  };
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode({0xff, 0xfe, 0x00}), "//4A");
  EXPECT_EQ(job_name(12), "job-12");
  EXPECT_EQ(parse_job_name("job-12"), 12u);
  EXPECT_FALSE(parse_job_name("job-"));
  EXPECT_FALSE(parse_job_name("job-1x"));
  EXPECT_FALSE(parse_job_name("12"));
  EXPECT_FALSE(parse_job_name("job-123456789012345678901"));
  EXPECT_TRUE(same_secret("sesame", "sesame"));
  EXPECT_FALSE(same_secret("sesame", "sesamf"));
  EXPECT_FALSE(same_secret("sesame", "sesame2"));
  EXPECT_FALSE(same_secret("", "x"));
}

TEST(ServerApi, MetricsRoutesAndText) {
  EXPECT_EQ(route_of("GET", "/v1/jobs/job-7"), "GET /v1/jobs/{id}");
  EXPECT_EQ(route_of("POST", "/v1/jobs/job-7/cancel"), "POST /v1/jobs/{id}/cancel");
  EXPECT_EQ(route_of("GET", "/secret/../x"), "GET other");
  RequestCounter counter;
  counter.count("GET", "/v1/jobs/job-1", 200);
  counter.count("GET", "/v1/jobs/job-2", 200);
  EngineStats stats;
  stats.batch_size = Histogram({1, 2, 4});
  stats.batch_size.observe(3);
  stats.batch_size.observe(1);
  stats.images = 5;
  const std::string text = render_metrics(counter, &stats);
  EXPECT_NE(text.find("cm_http_requests_total{endpoint=\"GET /v1/jobs/{id}\",status=\"200\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("cm_batch_size_bucket{le=\"2\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cm_batch_size_bucket{le=\"4\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cm_batch_size_sum 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cm_images_total 5\n"), std::string::npos) << text;
  EXPECT_NE(render_metrics(counter, nullptr).find("cm_model_loaded 0\n"), std::string::npos);
}

std::string png_of(int w, int h, int channels, uint8_t value) {
  ImageU8 image;
  image.width = w, image.height = h, image.channels = channels;
  image.pixels.assign(static_cast<size_t>(w) * h * channels, value);
  const auto bytes = encode_png(image);
  return std::string(bytes.begin(), bytes.end());
}

Form edit_form() {
  Form f;
  f.files["image"] = png_of(28, 28, 1, 100);
  f.files["mask"] = png_of(28, 28, 1, 255);
  f.fields["prompt"] = "sneaker";
  f.fields["seed"] = "5";
  return f;
}

std::string refused_part(const Form& f) {
  try {
    parse_edit(f, fmnist(), 8);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.message.rfind(e.param + ": ", 0), 0u) << e.message;
    return e.param;
  }
  return "accepted";
}

TEST(ServerApi, EditFormsBecomeEditRequests) {
  const auto r = parse_edit(edit_form(), fmnist(), 8);
  ASSERT_TRUE(r.edit);
  EXPECT_EQ(r.edit->task, EditTask::kInpaint);
  EXPECT_EQ(r.seed, 5u);
  EXPECT_EQ(r.edit->seed, 5u);
  EXPECT_EQ(r.class_labels, std::vector<int64_t>{7});
  EXPECT_EQ(r.edit->mask.channels, 1);
  EXPECT_EQ(r.edit->mask.pixels.front(), 255);

  // Any size is brought to the model's; a mask with alpha: transparent = regenerate.
  Form f = edit_form();
  f.files["image"] = png_of(56, 56, 3, 10);
  f.files["mask"] = png_of(56, 56, 4, 0);  // fully transparent
  const auto big = parse_edit(f, fmnist(), 8);
  EXPECT_EQ(big.edit->image.width, 28);
  EXPECT_EQ(big.edit->mask.width, 28);
  EXPECT_EQ(big.edit->mask.pixels.front(), 255);
  // Fully opaque (a browser canvas): by colour, white = regenerate, black = keep.
  f.files["mask"] = png_of(56, 56, 4, 255);
  EXPECT_EQ(parse_edit(f, fmnist(), 8).edit->mask.pixels.front(), 255);
  ImageU8 opaque_black;
  opaque_black.width = opaque_black.height = 56, opaque_black.channels = 4;
  for (int i = 0; i < 56 * 56; ++i) opaque_black.pixels.insert(opaque_black.pixels.end(), {0, 0, 0, 255});
  const auto black = encode_png(opaque_black);
  f.files["mask"] = std::string(black.begin(), black.end());
  EXPECT_EQ(parse_edit(f, fmnist(), 8).edit->mask.pixels.front(), 0);

  // No mask: the image's own transparency.
  f = edit_form();
  f.files.erase("mask");
  EXPECT_EQ(refused_part(f), "mask");
  f.files["image"] = png_of(28, 28, 4, 0);
  EXPECT_EQ(parse_edit(f, fmnist(), 8).edit->mask.pixels.front(), 255);

  f = edit_form();
  f.files.erase("mask");
  f.fields["task"] = "colorize";
  f.fields["steps"] = "3";
  f.fields["timesteps"] = "";
  const auto c = parse_edit(f, fmnist(), 8);
  EXPECT_EQ(c.edit->task, EditTask::kColorize);
  EXPECT_EQ(c.edit->num_inference_steps, 3);
  f.fields.erase("steps");
  f.fields["timesteps"] = "[22, 0]";
  EXPECT_EQ(parse_edit(f, fmnist(), 8).edit->timesteps, (std::vector<int64_t>{22, 0}));
}

TEST(ServerApi, EditFormErrorsNameThePart) {
  auto with = [](const char* key, const std::string& value, bool file = false) {
    Form f = edit_form();
    (file ? f.files : f.fields)[key] = value;
    return f;
  };
  Form f = edit_form();
  f.files.erase("image");
  EXPECT_EQ(refused_part(f), "image");
  EXPECT_EQ(refused_part(with("image", "GIF89a", true)), "image");
  EXPECT_EQ(refused_part(with("mask", png_of(10, 10, 1, 0), true)), "mask");
  EXPECT_EQ(refused_part(with("task", "sharpen")), "task");
  EXPECT_EQ(refused_part(with("task", "interpolate")), "task");
  EXPECT_EQ(refused_part(with("n", "9")), "n");
  EXPECT_EQ(refused_part(with("n", "two")), "n");
  EXPECT_EQ(refused_part(with("seed", "-1")), "seed");
  EXPECT_EQ(refused_part(with("steps", "41")), "steps");
  EXPECT_EQ(refused_part(with("timesteps", "0,22")), "timesteps");
  EXPECT_EQ(refused_part(with("prompt", "dragon")), "prompt");
  EXPECT_EQ(refused_part(with("sigma", "2")), "sigma");  // only for denoise
  EXPECT_EQ(refused_part(with("response_format", "url")), "response_format");
  EXPECT_EQ(refused_part(with("size", "64x64")), "size");
  EXPECT_EQ(refused_part(with("colour", "red")), "colour");
  // A small file claiming a huge image is refused before it is decoded.
  std::string huge = png_of(1, 1, 1, 0);
  huge[16] = huge[20] = 0x7f;  // width and height in IHDR: 2^30 and more
  EXPECT_EQ(refused_part(with("image", huge, true)), "image");
}

TEST(ServerApi, Base64DecodesWhatItEncodes) {
  for (const std::string text : {"", "a", "ab", "abc", "abcd", "\xff\x10 binary"}) {
    const std::vector<uint8_t> bytes(text.begin(), text.end());
    EXPECT_EQ(base64_decode(base64_encode(bytes), "x"), bytes);
    EXPECT_EQ(base64_decode("data:image/png;base64," + base64_encode(bytes), "x"), bytes);
  }
  for (const std::string bad : {"ab$c", "YQ==YQ", "data:image/png,abc", "Y"}) {
    try {
      base64_decode(bad, "init_images");
      ADD_FAILURE() << bad << " accepted";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.param, "init_images");
    }
  }
}

}  // namespace
}  // namespace cm::server
