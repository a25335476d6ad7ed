#include <filesystem>

#include "cm/config.h"
#include "cm/pipeline.h"
#include "cm/unet.h"

namespace cm {

void save_pretrained(const std::string& dir, UNet2DModel& unet, const SchedulerConfig& scheduler) {
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(dir) / "scheduler");
  PipelineIndex{}.save(dir);
  save_unet(unet, (fs::path(dir) / "unet").string());
  write_text_file((fs::path(dir) / "scheduler" / "scheduler_config.json").string(),
                  scheduler.to_json());
}

void save_pretrained(const std::string& dir, UNet2DModel& unet,
                     const SCMSchedulerConfig& scheduler) {
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(dir) / "scheduler");
  PipelineIndex index;
  index.scheduler_class = "SCMScheduler";
  index.save(dir);
  save_unet(unet, (fs::path(dir) / "unet").string());
  write_text_file((fs::path(dir) / "scheduler" / "scheduler_config.json").string(),
                  scheduler.to_json());
}

void ConsistencyModelPipeline::save_pretrained(const std::string& dir) {
  cm::save_pretrained(dir, unet_, scheduler_.config());
}

}  // namespace cm
