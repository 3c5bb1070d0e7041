"""Where trials run. A backend places TrialJobs and hands back what finished (or was lost)."""

from hpo.backends.base import Backend, JobDone

__all__ = ["Backend", "JobDone", "make_backend"]


def make_backend(kind: str, spec, *, parallel: int, resources=None, ray_address=None) -> Backend:
    """Build the backend named ``kind`` (``local`` or ``ray``) for a sweep."""
    from hpo.errors import BackendError

    if kind == "local":  # worker processes, even for one: a crash or exit fails one trial
        from hpo.backends.process import ProcessBackend

        return ProcessBackend(spec, max(1, parallel))
    if kind == "ray":
        from hpo.backends.ray_backend import RayBackend

        return RayBackend(spec, parallel, resources=resources, address=ray_address)
    raise BackendError(
        f"backend {kind!r} cannot run a coordinated sweep here; use local or ray "
        "(for Kubernetes agents, create the sweep and start `hpo agent`)."
    )
