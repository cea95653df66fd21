"""File formats only: DICOM, SIIM run-length encoding, PNG, and atomic writes."""
