"""Everything between CROHME files and a training batch."""
