"""Where training tensors live: on the GPU when they fit, else on the host with each batch
copied through pinned memory. One decision for a set of tensors, so that the rows of one
batch never live on two devices."""

from __future__ import annotations

import torch

# The share of free GPU memory the training images may take on the device; the rest is
# for the model, its activations and the optimizer state.
DEVICE_SHARE = 0.3


def gather_rows(tensor: torch.Tensor, indices: torch.Tensor, placement: str,
                device: torch.device) -> torch.Tensor:
    """tensor[indices] on `device`. From the host to a GPU the rows go through pinned
    memory (torch's caching host allocator reuses blocks of a batch's size, so this is a
    memcpy), and the copy overlaps the previous step's compute."""
    if indices.device != tensor.device:
        # From pinned memory: a copy from pageable memory would wait for the GPU's queue.
        indices = indices.pin_memory() if tensor.is_cuda else indices
        indices = indices.to(tensor.device, non_blocking=True)
    rows = tensor[indices]
    if placement == "host, batches pinned":
        rows = rows.pin_memory()
    return rows.to(device, non_blocking=True)


def caches_on_device(nbytes: int, free_bytes: int, cache: bool | str) -> bool:
    """classifier.cache_on_device's rule: true or false as set; auto when `nbytes` take
    under DEVICE_SHARE of the GPU's `free_bytes`."""
    if isinstance(cache, bool):
        return cache
    return nbytes < DEVICE_SHARE * free_bytes


def place(tensors: list[torch.Tensor], device: torch.device, cache: bool | str = "auto"
          ) -> tuple[list[torch.Tensor], str]:
    """The tensors (or a data.tensors.CacheRowSource, rows on disk or made per batch: made
    whole on the GPU, else a batch at a time) all on the GPU when together they take under
    DEVICE_SHARE of its free memory, else all on the host (batches then go through pinned
    memory); on a CPU, as they are. `cache` true or false overrides the rule
    (classifier.cache_on_device). One decision for all, so rows of one batch never live on
    two devices."""
    if device.type != "cuda":
        return tensors, "host"
    free, _ = torch.cuda.mem_get_info(device)
    if caches_on_device(sum(t.nbytes for t in tensors), free, cache):
        return [t.to(device) for t in tensors], "device"
    return tensors, "host, batches pinned"
