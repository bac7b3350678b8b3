"""SAD, selectors, and protect/unprotect of ESP and AH packets."""
