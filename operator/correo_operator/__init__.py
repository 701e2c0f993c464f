"""correo's control plane: the API (CRDs), loading and validating resources,
the pure renderer, status and conditions, and the two runtimes that apply
them: the kopf operator on Kubernetes and ``correo up`` on one machine.

It imports ``correo_server`` (the shared configuration model) and never the
other way round.  This package is deliberately not called ``operator``, which
is a standard-library module.
"""

__version__ = "0.1.0"
