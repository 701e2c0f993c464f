"""The local runtime: ``correo up``, ``correo apply``, ``correo status``.

The same YAML, the same renderer (``correo_operator.render``), the same
servers (``correo serve ...``) and the same status code
(``correo_operator.status``) as on Kubernetes; only the runtime differs:
local processes on 127.0.0.1 with data under one folder.

``layout`` names the files in the data folder, ``stack`` turns loaded
resources into the configuration folder, ``keys`` makes the self-signed
certificate and DKIM keys, ``supervisor`` runs and restarts the processes,
``up`` is the command, ``statuscmd`` computes and prints status.
"""
