"""Generated from protos/palaestra/v1 - do not edit."""
