// diffusers' config.json for the UNet and the scheduler, each parsed and validated.
#include "cm/config.h"
#include "cm/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto unet = cm::UNetConfig::from_json(text, "fuzz");
    unet.validate("fuzz");
    cm::UNetConfig::from_json(unet.to_json(), "fuzz round trip");
  } catch (const cm::Error&) {
  }
  try {
    const auto scheduler = cm::SchedulerConfig::from_json(text, "fuzz");
    scheduler.validate("fuzz");
    cm::SchedulerConfig::from_json(scheduler.to_json(), "fuzz round trip");
  } catch (const cm::Error&) {
  }
  return 0;
}
