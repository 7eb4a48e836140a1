# The front door of admmsearch, written once: type checkers read these imports, and
# admmsearch/__init__.py loads each name from them lazily (lazy_loader.attach_stub).
from .compression import Compressed as Compressed
from .compression import FromModel as FromModel
from .compression import FromSettings as FromSettings
from .compression import compress as compress
from .compression import read_plan as read_plan
from .config import load_study as load_study
from .config import validate_study as validate_study
from .data import load_dataset as load_dataset
from .deploy import load_model as load_model
from .errors import AdmmSearchError as AdmmSearchError
from .models import compressible_layers as compressible_layers
from .models import create_model as create_model
from .packed import ModelMeta as ModelMeta
from .packed import model_storage as model_storage
from .packed import pack_model as pack_model
from .pipeline import PipelineResult as PipelineResult
from .pipeline import run_pipeline as run_pipeline
from .plan import LayerPlan as LayerPlan
from .plan import Plan as Plan
from .search.catalog import open_existing as open_existing
from .search.front import front_table as front_table
from .search.front import write_front as write_front
from .search.study import prepare as prepare
from .search.study import run_study as run_study
from .settings import PipelineSettings as PipelineSettings

__version__: str
