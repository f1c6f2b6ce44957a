"""wavefront.datasets"""
