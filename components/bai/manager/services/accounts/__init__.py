"""Account administration (the GraphQL account mutations): users, keypairs, domains and projects.

Each write is one transaction: the privilege checks of ``services.privileges`` run before
anything is read or hashed where they can, and again against the rows it locks; a missing object
or a conflict answers ``ok=False`` with a message (``outcome.Refused``), a privilege failure or
malformed input raises (the GraphQL answer carries the error), and either way nothing is written.
"""
