"""The webhook target: one signed POST per call (and per incident event) to any HTTP receiver
(`target`): the request bodies (`body`), their Standard Webhooks signature and ids
(`signing`), and whose fault a reply says a failure is (`replies`)."""
