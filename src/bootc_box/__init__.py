"""bootc-box: boot a bootc container image as a VM in one command."""

__version__ = "0.1.0"
