"""fastwsol: Bridging the Gap between Classification and Localization for WSOL (Kim et al., CVPR 2022)."""

__version__ = "0.1.0"
