// glibc's malloc policy for cm, in two phases. glibc serves blocks below its mmap threshold from
// the heap, whose freed pages stay resident, and above it with mmap, which returns them on free
// but page-faults them in again on every allocation.
// - While weights are loaded and packed (the first UNet call packs, docs/performance.md), the
//   threshold is 8 MB, so freed weight-sized blocks leave the process: ImageNet-64 peaked at
//   1581 MB with glibc's default and 1458 MB with this.
// - Once the first call is done, only activations come and go: the threshold is raised to 512 MB
//   so they are reused from the heap instead of faulted in (LSUN-256 float32: 10.5 → 8.6 s).
// MALLOC_MMAP_THRESHOLD_ in the environment overrides both.
#pragma once

namespace cm::cli {

void memory_policy_for_loading();
void memory_policy_for_running();

}  // namespace cm::cli
