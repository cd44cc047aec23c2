"""PHI-S (``normalize: phi_s``): an orthogonal rotation and one scale that give every channel of a
random anisotropic field variance 1, invertible, for channel counts with and without a Hadamard
matrix; a store's transform is refused when its file is not the one the manifest names, and a term
that needs it is refused where no store keeps it."""

import numpy as np
import pytest

from tests.conftest import build_store_in_process
from vfmkd_ray.config import load_config
from vfmkd_ray.losses.base import StudentLevels
from vfmkd_ray.losses.registry import build_loss_terms
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet
from vfmkd_ray.store.channel_stats import normalized_term_stats
from vfmkd_ray.store.errors import FeatureStoreError
from vfmkd_ray.store.manifest import read_manifest
from vfmkd_ray.store.phi_s import PHI_S_FILE, PhiS, hadamard, read_phi_s, spreading_rotation, term_phi_s


@pytest.mark.parametrize("channels", [8, 6, 384])  # Hadamard; Givens; DINO ViT-S's width
def test_phi_s_is_invertible_and_gives_every_channel_unit_variance(channels):
    rng = np.random.default_rng(channels)
    mixing = rng.normal(size=(channels, channels)) * np.logspace(0, 3, channels)[None]
    field = rng.normal(size=(20000, channels)) @ mixing.T + rng.normal(size=channels) * 10
    phi = PhiS.of(field.mean(axis=0), np.cov(field.T, bias=True))
    standardized = phi.apply(field)
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(standardized.var(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(phi.invert(standardized), field, rtol=1e-9, atol=1e-6)
    # A rotation and one scale: distances between cells keep their ratios (not a whitening).
    scale = np.sqrt(np.mean(np.linalg.eigvalsh(np.cov(field.T, bias=True))))
    np.testing.assert_allclose(phi.matrix @ phi.matrix.T * scale**2, np.eye(channels), atol=1e-9)


def test_the_spreading_rotation_is_hadamard_for_powers_of_two_and_exact_otherwise():
    assert hadamard(6) is None and np.allclose(hadamard(8) @ hadamard(8).T, np.eye(8))
    eigenvalues = np.array([9.0, 1e-6, 3.0, 0.5, 0.25, 40.0, 2.0])
    rotation = spreading_rotation(eigenvalues)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(np.diag(rotation @ np.diag(eigenvalues) @ rotation.T), eigenvalues.mean())


def test_a_tampered_transform_and_a_term_without_a_store_are_refused(tiny_config, tmp_path):
    dataset = build_store_in_process(tiny_config)
    manifest = read_manifest(dataset)
    assert set(read_phi_s(dataset, manifest.phi_s)) == set(manifest.layers)
    # What training and eval standardise by, read from the store the config names.
    [(layer, spec)] = manifest.layers.items()
    levels = StudentLevels(YOLOv8CSPDarknet("n").feature_info)
    for normalize in ("channel", "phi_s"):
        cfg = tiny_config.model_copy(
            update={
                "distill": load_config(
                    None, [f"distill.terms={{kd: {{type: feature_mse, normalize: {normalize}}}}}"]
                ).distill
            }
        )
        terms = build_loss_terms(cfg.distill, levels, {"sam": {layer: spec.shape}})
        if normalize == "phi_s":
            packed = term_phi_s(cfg, terms)[f"sam/{layer}"]
            assert packed.shape == (1 + spec.shape[0], spec.shape[0])
        else:
            stats = normalized_term_stats(cfg, terms)[f"sam/{layer}"]
            assert stats[0].tolist() == pytest.approx(manifest.channel_stats[layer].mean)
    with open(f"{dataset}/{PHI_S_FILE}", "ab") as file:
        file.write(b"\0")
    with pytest.raises(FeatureStoreError, match=f"{PHI_S_FILE} is not the file the store's manifest names"):
        read_phi_s(dataset, manifest.phi_s)
    cfg = load_config(
        None, [f"store.root={tmp_path}/nowhere", "distill.terms={kd: {type: feature_mse, normalize: phi_s}}"]
    )
    levels = StudentLevels(YOLOv8CSPDarknet("n").feature_info)
    terms = build_loss_terms(cfg.distill, levels, {"sam": {"image_embed": (256, 4, 4)}})
    with pytest.raises(FeatureStoreError, match="distill.terms.kd.normalize phi_s standardises teacher sam"):
        term_phi_s(cfg, terms)
