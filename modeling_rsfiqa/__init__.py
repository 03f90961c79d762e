"""rsfiqa: region-aware image quality assessment, Hugging Face native.

``import modeling_rsfiqa`` registers the Auto classes and the ``image-quality`` pipeline.
"""
