"""MCollective 2.x as a fact source: read an existing OpenShift v2 fleet through its own
mcollectived (ActiveMQ over STOMP, the psk security plugin), with nothing new on the nodes.

``marshal`` is a restricted Ruby Marshal codec, ``psk`` the message envelope and its
checks, ``source`` the STOMP client that discovers and polls nodes into the fleet model.
"""
