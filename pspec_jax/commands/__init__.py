"""Subcommands of `pspec`; see pspec_jax.cli."""


def enable_compilation_cache() -> None:
    """Persists XLA compilations under $PSPEC_HOME/jax-cache, shared by every pspec process
    of this user: a party's secure programs are cut into stages without host callbacks
    (`mpc.stages`), so a second process — the next `pspec generate`, a restarted server
    or dealer — loads them instead of compiling (every stage is kept, however quickly it
    compiled: a session has hundreds). JAX_COMPILATION_CACHE_DIR puts the cache elsewhere;
    PSPEC_NO_JIT_CACHE turns it off."""
    import os

    import jax

    from pspec_jax.models.default import pspec_home

    if os.environ.get("PSPEC_NO_JIT_CACHE"):
        return
    if not jax.config.jax_compilation_cache_dir:
        try:
            path = pspec_home() / "jax-cache"
            path.mkdir(mode=0o700, parents=True, exist_ok=True)  # this user's programs only
        except OSError:
            return  # a read-only home only costs compile time
        jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
