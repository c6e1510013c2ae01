"""The networks: the frozen RGB baseline (ResNet18 + ARM, ``arm``), the landmark branch
(``landmark``), the weighted fusion of eq. 1-3 (``fusion``), and weights files loaded strictly
(``checkpoints``).

Paper: Kanamori et al., "Emotion estimation from face images using facial landmarks" (docs/SPEC.md).
Baseline: Shi & Zhu 2021, "Learning to Amend Facial Expression Representation via De-albino and
Affinity" (arXiv 2103.10189; code: SimKarras/Amend-Representation-Module).

The names below are the public ones, importable as ``fer_lib.models.X`` as torchvision's are.
"""

from fer_lib.models.arm import (
    ARM,
    ARMNet,
    arm_geometry,
    build_resnet18_trunk,
    imagenet_weights_path,
    load_arm_checkpoint,
    load_population_means,
    population_means,
    save_arm_checkpoint,
)
from fer_lib.models.checkpoints import (
    ARM_FILE_HINT,
    CheckpointError,
    CheckpointNotFoundError,
    check_classes,
    load_state_strict,
    weights_fingerprint,
)
from fer_lib.models.folders import folder_architecture, local_folder
from fer_lib.models.fusion import (
    FusionModel,
    FusionOutput,
    WeightGate,
    fit_temperature,
    landmark_memory_format,
)
from fer_lib.models.landmark import COORDS_HIDDEN, CoordinateMLP, LandmarkCNN

__all__ = [
    "ARM",
    "ARMNet",
    "ARM_FILE_HINT",
    "COORDS_HIDDEN",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CoordinateMLP",
    "FusionModel",
    "FusionOutput",
    "LandmarkCNN",
    "WeightGate",
    "arm_geometry",
    "build_resnet18_trunk",
    "check_classes",
    "fit_temperature",
    "folder_architecture",
    "imagenet_weights_path",
    "landmark_memory_format",
    "load_arm_checkpoint",
    "load_population_means",
    "load_state_strict",
    "local_folder",
    "population_means",
    "save_arm_checkpoint",
    "weights_fingerprint",
]
