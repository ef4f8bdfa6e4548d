"""The easla target: one call object per call and its MP3 over SOAP (`target`), through a
keep-alive transport that streams large bodies (`soap`)."""
