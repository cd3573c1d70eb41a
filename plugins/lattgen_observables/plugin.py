"""Hook implementations of the observables plugin: the scalar-field observables (``scalar_field``)."""

from lattgen import hookimpl


@hookimpl
def lattgen_register_observables(register):
    """Register every observable of ``scalar_field.OBSERVABLES`` (factory(lattice) -> Observable),
    for real scalar fields (``field="real"``)."""
    from .scalar_field import OBSERVABLES

    for name, (factory, doc) in OBSERVABLES.items():
        register(name, factory, doc=doc, field="real")
