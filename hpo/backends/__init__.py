"""Where trials run. A backend places TrialJobs and hands back what finished (or was lost)."""

import logging

from hpo.backends.base import Backend, JobDone

__all__ = ["Backend", "JobDone", "make_backend"]


def make_backend(kind: str, spec, *, parallel: int, resources=None, ray_address=None) -> Backend:
    """Build the backend named ``kind`` (``local`` or ``ray``) for a sweep."""
    from hpo.errors import BackendError

    if kind == "local":  # worker processes, even for one: a crash or exit fails one trial
        from hpo.backends.process import ProcessBackend

        if getattr(resources, "gpu", None) == "auto":
            logging.getLogger("hpo.backends").warning(
                "resources.gpu: auto packs trials by memory on the Ray backend only "
                "(--backend ray); the local backend runs its %d worker(s) on the visible "
                "GPUs without packing.", max(1, parallel))

        return ProcessBackend(spec, max(1, parallel))
    if kind == "ray":
        from hpo.backends.ray_backend import RayBackend

        return RayBackend(spec, parallel, resources=resources, address=ray_address)
    raise BackendError(
        f"backend {kind!r} cannot run a coordinated sweep here; use local or ray "
        "(for Kubernetes agents, create the sweep and start `hpo agent`)."
    )
