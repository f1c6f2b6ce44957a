"""wavefront.estimators"""
