"""wavefront.imaging"""
