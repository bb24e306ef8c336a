"""Settings from config files and command-line flags (HW3 "Flags").

    python train.py configs/finetune_params_config.py --init_from=gpt2-medium --rank=8

A bare argument names a config file: a Python file whose public globals are settings. Each
`--key=value` (or `key=value`) then overrides one setting that already exists. A value is read
as a Python literal when it parses as one (8, 2e-4, True, None, "x"), as a string otherwise, and
must keep the type of the setting it overrides (an int may stand for a float).
"""

import ast
import runpy

SETTING_TYPES = (bool, int, float, str, type(None))


def load_config(argv, defaults=None):
    """Apply config files and --key=value flags from `argv`, in order, to `defaults`; returns a dict."""
    config = dict(defaults or {})
    for arg in argv:
        if "=" not in arg:
            file_globals = runpy.run_path(arg)
            config.update({k: v for k, v in file_globals.items()
                           if not k.startswith("_") and isinstance(v, SETTING_TYPES)})
            continue
        key, text = arg.removeprefix("--").split("=", 1)
        if key not in config:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(config))}")
        config[key] = _parse_value(key, text, config[key])
    return config


def _parse_value(key, text, default):
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text  # a bare word such as gpt2-medium
    if default is None or value is None or type(value) is type(default):
        return value
    if isinstance(default, float) and type(value) is int:
        return float(value)
    raise ValueError(f"--{key}={text}: expected a {type(default).__name__}, got a {type(value).__name__}")
