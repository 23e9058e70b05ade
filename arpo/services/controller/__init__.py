"""The controller: the REST API and run registry (`python -m arpo.services.controller`)."""
