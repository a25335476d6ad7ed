// A folder of PNG/JPEG images as training data, in the torchvision ImageFolder convention: one
// sub-folder per class (labels in sorted name order), or images directly in the folder for
// unlabelled data.
#pragma once

#include <string>

#include "training/data.h"

namespace cm::training {

// Every .png/.jpg/.jpeg file (any case) is read, converted to `channels` (1 or 3) and resized to
// size×size. Unreadable files are skipped and listed in Dataset::skipped; a missing folder, or one
// with no readable image, is a cm::Error naming it. limit > 0 keeps the first `limit` images.
Dataset load_image_folder(const std::string& dir, int size, int channels, int64_t limit = 0);

}  // namespace cm::training
