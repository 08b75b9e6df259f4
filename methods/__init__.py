"""Method adapters behind one contract (methods.base.SRMethod). The registry is the
`yonos.methods` entry-point group in pyproject.toml; `yonos.plugins.load_method(name)` resolves it."""
