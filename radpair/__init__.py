"""radpair: a DICOM-native PACS node for imaging AI. Its layers are the sub-packages (docs/architecture.md)."""
