"""Prefect blocks: the environment block and its credentials wiring.

`prefect block register -m blocks` registers the block types defined here.
"""

from blocks.environment import DbtEnvironment

__all__ = ["DbtEnvironment"]
