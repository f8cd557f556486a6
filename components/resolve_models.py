"""Pin the models a run uses before train and evaluate (wraps rlsd.model_refs.resolve_models); never cached.

The recipe's base may be mutable (``store://models/<name>`` = the newest import, ``models:/<name>@champion``,
``model.continue_from: champion``), and so is the champion evaluate compares with. This step reads them once
and outputs immutable references, which train and evaluate take as parameters: their KFP cache keys (and
train's checkpoint key) then change exactly when the models do.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def resolve_models(config_yaml: str, base_model: str, connections: Output[Artifact]
                   ) -> NamedTuple("Pinned", [("base_model", str), ("champion", str)]):
    """Args: base_model: a model reference ("" keeps the recipe's model.path and model.continue_from); given,
    training starts from it even when the recipe continues from the champion (the UI's explicit choice).
    Returns base_model: what train starts from (models:/<name>/<version> of the current champion with
    model.continue_from: champion when there is one and no base_model is given, else the base pinned:
    store://models/<name>@<id>, models:/<name>/<version> or a local path);
    champion: models:/<name>/<version> of the current @champion, "" when there is none."""
    from collections import namedtuple

    from rlsd.model_refs import resolve_models as resolve
    from rlsd.perimeter import step

    params = {"model.path": base_model, "model.continue_from": "base" if base_model else None}
    with step(config_yaml, params, log_path=connections.path) as cfg:
        pinned = resolve(cfg)
    print(f"base model: {pinned['base_model']}; champion: {pinned['champion'] or '(none)'}")
    return namedtuple("Pinned", ["base_model", "champion"])(pinned["base_model"], pinned["champion"])
