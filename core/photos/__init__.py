"""Reference photos: upload checks and normalisation, and the URL fal receives."""
