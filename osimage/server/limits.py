"""The bounds one service process enforces: sizes, quotas, caps and timeouts.

Built once from the settings table by `create_app`; the core takes them as given.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    image_size_cap: int = 1099511627776
    property_quota: int = 128
    member_quota: int = 128
    tag_quota: int = 128
    api_limit_max: int = 1000
    limit_param_default: int = 25
    user_storage_quota: int = 0  # bytes per project; 0: unlimited
    query_params_max: int = 100
    list_filters_max: int = 50
    json_body_max: int = 1024 * 1024
    json_depth_max: int = 32
    body_timeout: float = 60.0  # seconds a request body may send nothing
    copy_max: int = 10  # concurrent copy-from transfers per process
    copy_max_per_project: int = 3
    copy_timeout: float = 3600.0  # seconds per copy in all
    copy_min_rate: int = 1024  # bytes/s averaged per COPY_RATE_WINDOW; 0: none
