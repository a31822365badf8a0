"""The line profile: how a line's exports map onto LineLab, its stations, actions, recipe, control.

    from linelab.profile import load_profile, workspace_profile
    profile = load_profile("profile.yaml")
    profile.action("service_machine"), profile.default_recipe(), profile.line.station_order
"""

from linelab.profile.io import (
    PROFILE_FILE,
    dump_profile,
    load_profile,
    parse_profile,
    profile_path,
    require_profile,
    save_profile,
    workspace_profile,
)
from linelab.profile.schema import (
    Action,
    ActionParam,
    CauseMatch,
    Control,
    LineInfo,
    Profile,
    Reading,
    Setting,
    Source,
    Spec,
    Station,
    Wide,
)

__all__ = [
    "PROFILE_FILE",
    "Action",
    "ActionParam",
    "CauseMatch",
    "Control",
    "LineInfo",
    "Profile",
    "Reading",
    "Setting",
    "Source",
    "Spec",
    "Station",
    "Wide",
    "dump_profile",
    "load_profile",
    "parse_profile",
    "profile_path",
    "require_profile",
    "save_profile",
    "workspace_profile",
]
