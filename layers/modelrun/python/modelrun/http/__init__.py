"""The REST API adapter: the resolver with the one error mapping (``resolver``), request parsing (``requests``),
``next_token`` paging (``paging``) and the links responses carry (``links``).

Not to be confused with the standard library's ``http``: import it as ``modelrun.http``.
"""
