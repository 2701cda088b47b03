"""What every easyanimate package shares: atomic writes (`ea_core.atomic`) and reading user files and
configs with errors that name the file (`ea_core.files`)."""

from ea_core.atomic import (
           AtomicFile,
           atomic_directory,
           atomic_open,
           atomic_write,
           atomic_write_bytes,
           atomic_write_json,
           atomic_write_text,
)
from ea_core.files import WeightsFileError, check_fields, load_safetensors, load_state_dict, read_json_object

__all__ = ["AtomicFile", "WeightsFileError", "atomic_directory", "atomic_open", "atomic_write",
           "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_fields", "load_safetensors",
           "load_state_dict", "read_json_object"]
