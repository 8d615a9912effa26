"""eascmd: the operator's command line for eas-server, compatible with PAI-EAS's eascmd."""
