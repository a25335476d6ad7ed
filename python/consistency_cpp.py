"""consistency.cpp from Python through its C API (include/cm/cm.h) and ctypes: no build step.

    from consistency_cpp import Pipeline
    pipe = Pipeline("models/fmnist-cm")                  # libcm.so: $CM_LIBRARY or beside cm
    images = pipe.generate(batch_size=4, class_labels=[3], seed=0)
    images[0].pixels  # bytes, height x width x channels

Only the standard library: images come back as bytes with their shape.
"""
import ctypes
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

_c_int64_p = ctypes.POINTER(ctypes.c_int64)
_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_LOG = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _LoadParams(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_char_p), ("device", ctypes.c_char_p)]


class _Images(ctypes.Structure):
    _fields_ = [("pixels", ctypes.POINTER(ctypes.c_uint8)), ("count", ctypes.c_int),
                ("height", ctypes.c_int), ("width", ctypes.c_int), ("channels", ctypes.c_int),
                ("class_labels", _c_int64_p)]


class _GenerateParams(ctypes.Structure):
    _fields_ = [("batch_size", ctypes.c_int), ("num_inference_steps", ctypes.c_int),
                ("timesteps", _c_int64_p), ("num_timesteps", ctypes.c_size_t),
                ("class_labels", _c_int64_p), ("num_class_labels", ctypes.c_size_t),
                ("seed", ctypes.c_uint64), ("progress", _PROGRESS),
                ("progress_user_data", ctypes.c_void_p)]


class _ImageView(ctypes.Structure):
    _fields_ = [("pixels", ctypes.POINTER(ctypes.c_uint8)), ("height", ctypes.c_int),
                ("width", ctypes.c_int), ("channels", ctypes.c_int)]


class _EditParams(ctypes.Structure):
    _fields_ = [("task", ctypes.c_char_p), ("image", _ImageView), ("mask", _ImageView),
                ("factor", ctypes.c_int), ("sigma", ctypes.c_double), ("add_noise", ctypes.c_int),
                ("seed2", ctypes.c_uint64), ("frames", ctypes.c_int), ("batch_size", ctypes.c_int),
                ("num_inference_steps", ctypes.c_int), ("seed", ctypes.c_uint64),
                ("class_labels", _c_int64_p), ("num_class_labels", ctypes.c_size_t),
                ("progress", _PROGRESS), ("progress_user_data", ctypes.c_void_p)]


class CmError(RuntimeError):
    """A call the library refused (status 1) or that failed (3)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Cancelled(CmError):
    """The progress callback returned True."""


@dataclass
class Image:
    pixels: bytes  # height * width * channels, row-major, channels interleaved
    height: int
    width: int
    channels: int
    class_label: Optional[int] = None


def _find_library() -> str:
    if os.environ.get("CM_LIBRARY"):
        return os.environ["CM_LIBRARY"]
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "..", "build", "libcm.so"),
                      os.path.join(here, "..", "lib", "libcm.so")):
        if os.path.exists(candidate):
            return candidate
    return "libcm.so"


_lib = None


def library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(_find_library())
        lib.cm_version.restype = ctypes.c_char_p
        lib.cm_last_error.restype = ctypes.c_char_p
        lib.cm_pipeline_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(_LoadParams),
                                         ctypes.POINTER(ctypes.c_void_p)]
        lib.cm_pipeline_free.argtypes = [ctypes.c_void_p]
        lib.cm_pipeline_info.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int)] * 3
        lib.cm_images_free.argtypes = [ctypes.POINTER(_Images)]
        lib.cm_generate_params_init.argtypes = [ctypes.POINTER(_GenerateParams)]
        lib.cm_generate.argtypes = [ctypes.c_void_p, ctypes.POINTER(_GenerateParams),
                                    ctypes.POINTER(_Images)]
        lib.cm_edit_params_init.argtypes = [ctypes.POINTER(_EditParams)]
        lib.cm_edit.argtypes = [ctypes.c_void_p, ctypes.POINTER(_EditParams),
                                ctypes.POINTER(_Images)]
        lib.cm_set_log_callback.argtypes = [_LOG, ctypes.c_void_p]
        _lib = lib
    return _lib


def version() -> str:
    return library().cm_version().decode()


def _check(status: int) -> None:
    if status != 0:
        message = library().cm_last_error().decode(errors="replace")
        raise (Cancelled if status == 2 else CmError)(status, message)


def _int64_array(values: Sequence[int]):
    return (ctypes.c_int64 * len(values))(*values) if values else None


def _progress(callback: Optional[Callable[[int, int], bool]]):
    if callback is None:
        return _PROGRESS()
    return _PROGRESS(lambda step, total, _user: 1 if callback(step, total) else 0)


def _collect(images: _Images) -> List[Image]:
    try:
        per_image = images.height * images.width * images.channels
        data = ctypes.string_at(images.pixels, per_image * images.count)
        return [Image(data[i * per_image:(i + 1) * per_image], images.height, images.width,
                      images.channels,
                      images.class_labels[i] if images.class_labels else None)
                for i in range(images.count)]
    finally:
        library().cm_images_free(ctypes.byref(images))


class Pipeline:
    """A loaded model (cm_pipeline): generate() and edit() as cm generate and cm edit."""

    def __init__(self, path: str, dtype: str = "float32", device: str = "cpu"):
        params = _LoadParams(dtype.encode(), device.encode())
        handle = ctypes.c_void_p()
        _check(library().cm_pipeline_load(path.encode(), ctypes.byref(params),
                                          ctypes.byref(handle)))
        self._handle = handle
        size, channels, classes = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        library().cm_pipeline_info(handle, ctypes.byref(size), ctypes.byref(channels),
                                   ctypes.byref(classes))
        self.sample_size, self.channels, self.num_classes = size.value, channels.value, classes.value

    def close(self) -> None:
        if self._handle:
            library().cm_pipeline_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def generate(self, batch_size: int = 1, steps: int = 1, timesteps: Sequence[int] = (),
                 class_labels: Sequence[int] = (), seed: int = 0,
                 progress: Optional[Callable[[int, int], bool]] = None) -> List[Image]:
        p = _GenerateParams()
        library().cm_generate_params_init(ctypes.byref(p))
        p.batch_size, p.num_inference_steps, p.seed = batch_size, steps, seed
        ts, labels = _int64_array(list(timesteps)), _int64_array(list(class_labels))
        p.timesteps, p.num_timesteps = ts, len(timesteps)
        p.class_labels, p.num_class_labels = labels, len(class_labels)
        p.progress = _progress(progress)
        out = _Images()
        _check(library().cm_generate(self._handle, ctypes.byref(p), ctypes.byref(out)))
        return _collect(out)

    def edit(self, task: str, image: Optional[Image] = None, mask: Optional[Image] = None,
             seed: int = 0, batch_size: int = 1, steps: int = 0,
             class_labels: Sequence[int] = (), **extra) -> List[Image]:
        """extra: factor, sigma, add_noise, seed2, frames (as cm_edit_params)."""
        p = _EditParams()
        library().cm_edit_params_init(ctypes.byref(p))
        p.task, p.seed, p.batch_size, p.num_inference_steps = task.encode(), seed, batch_size, steps
        keep = []  # the buffers must outlive the call

        def view(img: Optional[Image]) -> _ImageView:
            if img is None:
                return _ImageView()
            buf = (ctypes.c_uint8 * len(img.pixels)).from_buffer_copy(img.pixels)
            keep.append(buf)
            return _ImageView(ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint8)), img.height,
                              img.width, img.channels)

        p.image, p.mask = view(image), view(mask)
        for name, value in extra.items():
            if name not in ("factor", "sigma", "add_noise", "seed2", "frames"):
                raise TypeError(f"edit(): unknown argument {name!r}")
            setattr(p, name, value)
        labels = _int64_array(list(class_labels))
        p.class_labels, p.num_class_labels = labels, len(class_labels)
        out = _Images()
        _check(library().cm_edit(self._handle, ctypes.byref(p), ctypes.byref(out)))
        return _collect(out)
