"""Energy meters behind one window interface; import them through ``edgeproof.measure.energy``."""
