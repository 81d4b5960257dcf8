"""What the daemon, the node agent, the simulator and the platform agent runner share.

The MQTT client factory and its TLS set-up (``wire.mqtt``), the topic names
(``wire.topics``), message authentication (``wire.signing``), the node-facts message
(``wire.facts``) and the command/reply messages (``wire.commands``). It sits at the bottom
of the layers: ``act``, ``observe``, ``agent`` and ``sim`` import it, so none of them has
to import a sibling to speak the same protocol (see ``[tool.importlinter]``).
"""
