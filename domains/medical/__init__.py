"""Medical volumes: NIfTI / DICOM I/O with affines and HU windows, procedural 3-D phantoms, a
slice-wise 2-D prior over axial slices and the inverse tasks of DiffusionMBIR (Chung et al., CVPR
2023): sparse-view and limited-angle CT, compressed-sensing MRI, scored with PSNR / SSIM on the
axial, coronal and sagittal views. See README.md in this folder."""
from __future__ import annotations

__all__ = ["adapter"]


def adapter(image_size: int = 16, n_slices: int = 8):
    """A small adapter for the conformance test and notebooks: 2-D slices of Shepp-Logan CT phantoms
    (embedded, no download), a VE process (sigma_max about the data diameter) and a tiny slice prior
    (``networks.SlicePrior`` when present, else ``workbench.nn.UNet(dims=2)``)."""
    from functools import partial

    from workbench.adapter import DomainAdapter
    from workbench.processes import VE

    from .data import VolumeDataModule
    from .metrics import slice_metrics

    dm = VolumeDataModule(source="phantom", modality="ct", image_size=image_size, n_slices=n_slices, n_train=2,
                          n_test=1, batch_size=4)
    return DomainAdapter(
        datamodule=dm,
        network=_tiny_network(),
        metrics=partial(slice_metrics),
        process=VE(sigma_min=0.01, sigma_max=float(image_size)),
        prediction="eps",
    )


def _tiny_network():
    try:
        from .networks import SlicePrior
    except ImportError:
        SlicePrior = None
    if SlicePrior is not None:
        try:
            return SlicePrior(channels=8, channel_mult=(1, 2), num_res_blocks=1)
        except TypeError:
            pass
    from workbench.nn import UNet

    return UNet(in_channels=1, dims=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4)
