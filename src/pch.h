// Precompiled header for the torch-using targets: parsing these once keeps builds quick on 2 cores.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>
