"""What every run of the project shares, whatever it builds: the floor under the trainers, the data engine, the
dataset builders and the command lines. It imports nothing else of ours, so every package may use it (except
`modeling_unires`, whose files travel with checkpoints as remote code).

Modules (import what you need; nothing heavy is imported here):

- ``hub``: every push to the Hub (``check_push_access`` before the work, ``push_folder`` after it, a token never
  uploaded), ``without_secrets`` for what a tracker or card may hold, ``TRACKER_LOG_DIR``
- ``output_dir``: one run per output folder (``OutputDirLock``, the ``overwrite_output_dir`` rule), for both trainers
  and the engine
- ``main_process``: ``on_main_process`` (rank 0 does it, every rank gets the outcome or the error) and the launch
  checks (processes that do not see each other; several processes on a CPU)
- ``sources``: a local path told from a Hub id (``check_local_or_hub``: "No model folder at ...")
- ``cli``: what every command line shares (help style, checked numbers, one-line errors, ``refuse_missing_paths``)
- ``rejects``: ``RejectLog`` (skipped or fixed items -> ``rejects.jsonl`` + a summary line)
- ``citation``: the reference paper's citation, for every card
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the six packages
