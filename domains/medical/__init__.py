"""Medical volumes: NIfTI / DICOM I/O with affines and HU windows, procedural 3-D phantoms, a
slice-wise 2-D prior over axial slices and the inverse tasks of DiffusionMBIR (Chung et al., CVPR
2023): sparse-view and limited-angle CT, compressed-sensing MRI, scored with PSNR / SSIM on the
axial, coronal and sagittal views. See README.md in this folder."""
from __future__ import annotations

__all__ = ["adapter"]


def adapter(image_size: int = 16, n_slices: int = 8):
    """A small adapter for the conformance test and notebooks: 2-D slices of Shepp-Logan CT phantoms
    (embedded, no download), a VE process (sigma_max about the data diameter) and a tiny
    :class:`~.networks.SlicePrior` (score output, as DiffusionMBIR's NCSN++)."""
    from functools import partial

    from workbench.adapter import DomainAdapter
    from workbench.processes import VE

    from .data import VolumeDataModule
    from .metrics import slice_metrics
    from .networks import SlicePrior

    sigma_max = float(image_size)
    dm = VolumeDataModule(source="phantom", modality="ct", image_size=image_size, n_slices=n_slices, n_train=2,
                          n_test=1, batch_size=4)
    net = SlicePrior(image_size=image_size, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                     mid_attention=False, sigma_min=0.01, sigma_max=sigma_max, groups=4)
    return DomainAdapter(datamodule=dm, network=net, metrics=partial(slice_metrics),
                         process=VE(sigma_min=0.01, sigma_max=sigma_max), prediction="score")
