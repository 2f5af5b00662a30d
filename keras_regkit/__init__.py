"""keras_regkit: regularization for Keras 3.

Importing the package registers every public class with Keras's
serialization registry under the package name `keras_regkit`, so saved
models load with `keras.saving.load_model` and no `custom_objects`.
"""

from keras_regkit import averaging
from keras_regkit import batch_norm
from keras_regkit import constraints
from keras_regkit import dropout
from keras_regkit import layers
from keras_regkit import monitor
from keras_regkit import optimizers
from keras_regkit import regularizers
from keras_regkit import reports
from keras_regkit import residual
from keras_regkit import rules
from keras_regkit import tuning
from keras_regkit import sam
from keras_regkit import schedules
from keras_regkit import saving
from keras_regkit.averaging import EMA
from keras_regkit.averaging import SWA
from keras_regkit.batch_norm import recalibrate_batch_norm
from keras_regkit.constraints import MaxNorm
from keras_regkit.dropout import dropout_plan
from keras_regkit.dropout import insert_dropout
from keras_regkit.dropout import remove_dropout
from keras_regkit.layers import DropBlock2D
from keras_regkit.layers import DropBlockSchedule
from keras_regkit.layers import DropPath
from keras_regkit.monitor import RegularizationMonitor
from keras_regkit.optimizers import DecoupledWeightDecay
from keras_regkit.optimizers import normalized_weight_decay
from keras_regkit.regularizers import L1
from keras_regkit.regularizers import L2
from keras_regkit.regularizers import Orthogonal
from keras_regkit.regularizers import CorrectedElasticNet
from keras_regkit.regularizers import ElasticNet
from keras_regkit.regularizers import ElasticNetCorrection
from keras_regkit.regularizers import GroupLasso
from keras_regkit.regularizers import apply_elastic_net_correction
from keras_regkit.residual import dropblock_plan
from keras_regkit.residual import droppath_plan
from keras_regkit.residual import insert_dropblock
from keras_regkit.residual import insert_droppath
from keras_regkit.residual import remove_dropblock
from keras_regkit.residual import remove_droppath
from keras_regkit.rules import constrain
from keras_regkit.rules import regularize
from keras_regkit.sam import SharpnessAwareMinimization
from keras_regkit.schedules import ConstantSchedule
from keras_regkit.schedules import CosineSchedule
from keras_regkit.schedules import EarlySchedule
from keras_regkit.schedules import LateSchedule
from keras_regkit.schedules import LinearSchedule
from keras_regkit.schedules import RegularizationSchedule
from keras_regkit.schedules import Schedule
from keras_regkit.schedules import ScheduledDropout
from keras_regkit.schedules import ScheduledSpatialDropout1D
from keras_regkit.schedules import ScheduledSpatialDropout2D
from keras_regkit.schedules import ScheduledSpatialDropout3D
from keras_regkit.schedules import ScheduledWeightDecay
from keras_regkit.schedules import StepSchedule
from keras_regkit.schedules import schedulable_dropout
from keras_regkit.saving import RulesNeedRestoreWarning
from keras_regkit.saving import load_model
from keras_regkit.saving import restore_rules
from keras_regkit.reports import sparsity
from keras_regkit.reports import summary

__version__ = "0.1.0"

__all__ = [
    "ConstantSchedule",
    "CorrectedElasticNet",
    "CosineSchedule",
    "DecoupledWeightDecay",
    "DropBlock2D",
    "DropBlockSchedule",
    "DropPath",
    "EMA",
    "EarlySchedule",
    "ElasticNet",
    "ElasticNetCorrection",
    "GroupLasso",
    "L1",
    "L2",
    "LateSchedule",
    "LinearSchedule",
    "MaxNorm",
    "Orthogonal",
    "RegularizationMonitor",
    "RegularizationSchedule",
    "RulesNeedRestoreWarning",
    "SWA",
    "Schedule",
    "ScheduledDropout",
    "ScheduledSpatialDropout1D",
    "ScheduledSpatialDropout2D",
    "ScheduledSpatialDropout3D",
    "ScheduledWeightDecay",
    "SharpnessAwareMinimization",
    "StepSchedule",
    "apply_elastic_net_correction",
    "averaging",
    "batch_norm",
    "constrain",
    "constraints",
    "dropblock_plan",
    "dropout",
    "dropout_plan",
    "droppath_plan",
    "insert_dropblock",
    "insert_dropout",
    "insert_droppath",
    "layers",
    "load_model",
    "monitor",
    "normalized_weight_decay",
    "optimizers",
    "recalibrate_batch_norm",
    "regularize",
    "regularizers",
    "remove_dropblock",
    "remove_dropout",
    "remove_droppath",
    "reports",
    "residual",
    "restore_rules",
    "rules",
    "sam",
    "saving",
    "schedulable_dropout",
    "schedules",
    "sparsity",
    "summary",
    "tuning",
]
