// SCMScheduler against diffusers' own (scripts/scm_reference.py prints the values below: diffusers
// 0.42.1, torch 2.15.0): the schedules, and whole sampling loops with every step's noise drawn
// from one seeded generator, as diffusers' step() draws it.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "cm/error.h"
#include "cm/scm_scheduler.h"

namespace cm::test {
namespace {

struct ScmCase {
  const char* name;
  uint64_t seed;
  double sigma_data;
  int num_inference_steps;
  std::vector<double> explicit_times;  // empty: set_timesteps(num_inference_steps)
  std::vector<double> timesteps;
  std::vector<std::pair<std::vector<double>, std::vector<double>>> steps;  // (prev, x0) each step
};

// What scripts/scm_reference.py printed.
const std::vector<ScmCase> kCases = {
    {"one step", 1, 0.5, 1, {}, {1.57079995, 0},
     {
      {{-0.25180617, -0.0202762838, 0.0702637061, -0.22547996, 0.195817217, 0.143343687, 0.212297812, -0.0805362538},
       {-0.25180617, -0.0202762838, 0.0702637061, -0.22547996, 0.195817217, 0.143343687, 0.212297812, -0.0805362538}},
     }},
    {"two steps, intermediate 1.3", 2, 0.5, 2, {}, {1.57079995, 1.29999995, 0},
     {
      {{-0.211932898, -0.460278809, 0.682517469, 0.415314108, -0.778603077, -0.541855216, -0.101556368, -0.504199862},
       {-0.0864334181, 0.157241926, 0.176580891, 0.20604676, -0.521618843, 0.210003838, -0.19449465, -0.174295485}},
      {{0.154811576, 0.107551798, -0.513585627, -0.217407197, 0.0247953385, 0.0820813328, 0.145865753, 0.0939537436},
       {0.154811576, 0.107551798, -0.513585627, -0.217407197, 0.0247953385, 0.0820813328, 0.145865753, 0.0939537436}},
     }},
    {"four steps, linspace", 3, 0.5, 4, {}, {1.57079995, 1.17809999, 0.785399973, 0.392699987, 0},
     {
      {{-0.796440423, 0.46038577, 0.263946116, 0.651847899, -0.370266378, 0.216940224, 0.172009274, -0.227251902},
       {-0.348784745, 0.0231802873, 0.0595541187, 0.209062681, 0.0761564448, 0.206015438, -0.0565607399, -0.497448355}},
      {{0.280022979, 0.156255156, 0.163572773, -0.318056762, -0.175024927, -0.361982226, 0.297327489, 0.176748216},
       {-0.0671941042, -0.186861664, -0.0162681565, -0.367642224, 0.0914592594, 0.0176345259, 0.0466356725, 0.130501032}},
      {{0.0375379622, 0.154084861, -0.101701558, 0.0830494016, -0.221933275, -0.166557014, 0.139052421, 0.0767737329},
       {0.121847987, 0.135317624, 0.135078788, -0.0207779557, 0.0602984726, -0.0499321222, 0.118528821, 0.134459898}},
      {{0.104661956, 0.171682015, 0.00950828195, 0.132169425, -0.0853783488, -0.0403151065, 0.163657144, 0.128480271},
       {0.104661956, 0.171682015, 0.00950828195, 0.132169425, -0.0853783488, -0.0403151065, 0.163657144, 0.128480271}},
     }},
    {"seven steps, linspace", 4, 1.0, 7, {}, {1.57079995, 1.3463999, 1.12199998, 0.897599936, 0.673200011, 0.448799998, 0.224399999, 0},
     {
      {{1.05509579, 0.643082619, 0.529370308, 1.51339805, -0.350721627, 0.0974887758, -0.683216155, -0.495155334},
       {0.99243319, -0.128201351, -1.49843001, -0.956563354, -1.22151065, 0.213511437, 0.735938311, -1.01709795}},
      {{-1.5190084, 0.571945131, -0.762639165, -0.139316976, 0.21055311, 1.08424151, -0.295051873, 0.472655386},
       {-0.860200584, -0.512545943, -0.378958672, -0.869086981, 0.150859803, 0.0572796315, 0.0706664473, 0.117245935}},
      {{-0.468282878, -0.867448628, -0.10188055, 0.166185126, 0.910687149, -0.547929108, 0.304323852, 0.267966986},
       {0.162994325, -0.246200815, -0.0990366638, 0.132182598, 0.0392565094, -0.538317978, 0.0995932668, -0.15981625}},
      {{-0.8085289, 0.0948276371, 0.872849107, 0.299728006, 1.01522624, -0.247911319, -0.0323565193, 1.18372881},
       {-0.0735757649, -0.304003298, 0.108458348, 0.114152774, -0.18007344, -0.12618643, 0.0725163147, 0.0858722106}},
      {{0.0531956851, -0.481160104, -0.217601091, -0.284326017, 0.25875029, 0.240919694, -0.0554556102, 0.71877265},
       {-0.438824177, 0.140386552, 0.124464214, 0.158540338, 0.153515935, -0.0128848255, 0.101990044, 0.223891497}},
      {{0.456642419, -0.00679418445, 0.0524756536, -0.12477643, 0.188088864, 0.110407762, -0.266649991, 0.376674056},
       {0.119391166, -0.293072343, -0.0632670373, -0.117940068, 0.212464735, 0.205767944, 0.0543799438, 0.349868745}},
      {{0.380170524, 0.0450598821, 0.0929351524, -0.0554274544, 0.196088627, 0.138055146, -0.184663102, 0.327298105},
       {0.380170524, 0.0450598821, 0.0929351524, -0.0554274544, 0.196088627, 0.138055146, -0.184663102, 0.327298105}},
     }},
    {"explicit times", 5, 0.5, 3, {1.5, 0.9, 0.4, 0}, {1.5, 0.899999976, 0.400000006, 0},
     {
      {{0.364647776, -0.231741056, -0.0988332629, 0.13091819, 0.180889711, -0.883872867, 0.369920373, 0.344723254},
       {0.188903913, 0.193718433, 0.192458346, -0.224595934, 0.15083544, -1.00213444, 0.16372171, 0.19289878}},
      {{-0.0710258633, 0.207459643, 0.11201369, -0.121040858, -0.00844846666, -0.445869029, 0.215797901, 0.0917419791},
       {0.0461063385, 0.0628996044, 0.10954456, 0.120015174, 0.110453621, -0.308061779, 0.0437295288, 0.0548792481}},
      {{0.0335181504, 0.198054239, 0.148969874, -0.00306154788, 0.0762680247, -0.282211751, 0.202017039, 0.137605548},
       {0.0335181504, 0.198054239, 0.148969874, -0.00306154788, 0.0762680247, -0.282211751, 0.202017039, 0.137605548}},
     }},
};

// The reference's stand-in for a network: any smooth function of the sample and the time.
at::Tensor model(const at::Tensor& sample, float t) {
  return 0.7 * sample - 0.25 * at::cos(3 * sample) + 0.1 * at::scalar_tensor(t, at::kFloat);
}

void expect_values(const at::Tensor& actual, const std::vector<double>& expected,
                   const std::string& what) {
  const auto a = actual.flatten().contiguous();
  ASSERT_EQ(a.numel(), static_cast<int64_t>(expected.size())) << what;
  for (int64_t i = 0; i < a.numel(); ++i)
    EXPECT_NEAR(a[i].item<float>(), expected[i], 1e-6) << what << " [" << i << "]";
}

TEST(ScmSchedulerGolden, SamplingLoopsMatchDiffusers) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    SCMSchedulerConfig config;
    config.sigma_data = c.sigma_data;
    SCMScheduler s(config);
    if (c.explicit_times.empty()) {
      s.set_timesteps(c.num_inference_steps);
    } else {
      s.set_timesteps(c.explicit_times);
    }
    ASSERT_EQ(s.timesteps().size(), c.timesteps.size());
    ASSERT_EQ(s.num_steps(), c.steps.size());
    for (size_t i = 0; i < c.timesteps.size(); ++i)
      EXPECT_EQ(s.timesteps()[i], static_cast<float>(c.timesteps[i])) << "time " << i;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(c.seed);
    auto sample = at::randn({2, 1, 2, 2}, g, at::TensorOptions().dtype(at::kFloat)) *
                  s.init_noise_scale();
    for (size_t i = 0; i < s.num_steps(); ++i) {
      const auto out = model(sample, s.timesteps()[i]);
      const auto x0 = s.denoise(out, i, sample);
      sample = s.step(out, i, sample, g);
      expect_values(sample, c.steps[i].first, "prev_sample, step " + std::to_string(i));
      expect_values(x0, c.steps[i].second, "pred_original_sample, step " + std::to_string(i));
    }
  }
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ScmSchedulerErrors, BadSchedulesAreOneLineErrors) {
  SCMScheduler s;
  EXPECT_NE(message_of([&] { s.set_timesteps(0); }).find("num_inference_steps"), std::string::npos);
  EXPECT_NE(message_of([&] { s.set_timesteps(1001); }).find("1001"), std::string::npos);
  EXPECT_NE(message_of([&] { s.set_timesteps(std::vector<double>{1.0}); }).find("at least two"),
            std::string::npos);
  EXPECT_NE(message_of([&] { s.set_timesteps(std::vector<double>{1.0, 1.2, 0}); })
                .find("descending"),
            std::string::npos);
  EXPECT_NE(message_of([&] { s.set_timesteps(std::vector<double>{2.0, 0}); }).find("2 is outside"),
            std::string::npos);
  EXPECT_NE(message_of([&] { s.set_timesteps(std::vector<double>{1.0, -0.5}); }).find("outside"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              SCMSchedulerConfig::from_json(R"({"prediction_type": "epsilon"})", "sched.json");
            }).find("sched.json: prediction_type 'epsilon'"),
            std::string::npos);
  EXPECT_EQ(scheduler_class_name(SCMSchedulerConfig{}.to_json(), "x"), "SCMScheduler");
  const auto round_trip = SCMSchedulerConfig::from_json(
      R"({"_class_name": "SCMScheduler", "sigma_data": 0.25, "sigma_max": 40})", "x");
  EXPECT_EQ(round_trip.sigma_data, 0.25);
  EXPECT_EQ(round_trip.sigma_max, 40);
}

}  // namespace
}  // namespace cm::test
