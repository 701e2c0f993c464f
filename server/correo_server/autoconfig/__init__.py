"""Client autoconfiguration and the MTA-STS policy, served over HTTP
(``correo serve autoconfig``): :mod:`.documents` makes the documents (pure),
:mod:`.service` serves them.  It reads only ``correo.yaml``; the renderer
(``correo_operator.render``) puts each MailDomain's ``autoconfig`` and
``mtaSts`` there, and its optional Ingress in front."""
