"""Hook implementations of the observables plugin: the scalar-field observables of lattgen.observables."""

from lattgen import hookimpl


@hookimpl
def lattgen_register_observables(register):
    """Register every observable of ``lattgen.observables.OBSERVABLES`` (factory(lattice) -> Observable)."""
    from lattgen.observables import OBSERVABLES

    for name, (factory, doc) in OBSERVABLES.items():
        register(name, factory, doc=doc)
