"""The one place that imports basicsr.

basicsr 1.4.2 imports `torchvision.transforms.functional_tensor`, which torchvision
removed (0.17+). Its functions now live in `torchvision.transforms.functional`, so we
alias the old module name before basicsr is imported. Keeping this in one module means
a future basicsr fix is a one-line change here.
"""

from __future__ import annotations

import sys

import torchvision.transforms.functional as _tv_functional

sys.modules.setdefault("torchvision.transforms.functional_tensor", _tv_functional)

from basicsr.archs import discriminator_arch  # noqa: E402
from basicsr.archs.rrdbnet_arch import RRDBNet  # noqa: E402
from basicsr.losses.gan_loss import GANLoss  # noqa: E402
from basicsr.metrics.psnr_ssim import calculate_psnr_pt, calculate_ssim_pt  # noqa: E402

UNetDiscriminatorSN = discriminator_arch.UNetDiscriminatorSN
VGGStyleDiscriminator = discriminator_arch.VGGStyleDiscriminator

__all__ = ["RRDBNet", "VGGStyleDiscriminator", "UNetDiscriminatorSN", "GANLoss",
           "calculate_psnr_pt", "calculate_ssim_pt"]
