"""A star's light from its temperature and size: a blackbody spectrum integrated with numpy.

Run it over the stars in stars.csv, on this machine or across the mesh:

    meshnode exec examples/blackbody.py --input-csv examples/stars.csv
    meshnode submit examples/blackbody.py --input-csv examples/stars.csv
"""

import numpy as np

H = 6.62607015e-34  # Planck constant, J s
C = 2.99792458e8  # speed of light, m/s
K = 1.380649e-23  # Boltzmann constant, J/K
SIGMA = 5.670374419e-8  # Stefan-Boltzmann constant, W m^-2 K^-4
R_SUN = 6.957e8  # m
L_SUN = 3.828e26  # W
PARSEC = 3.0857e16  # m
BANDS = {"U": (320e-9, 400e-9), "B": (400e-9, 500e-9), "V": (500e-9, 600e-9), "R": (600e-9, 750e-9)}


def planck(wavelength, temperature):
    """Spectral radiance B(lambda, T) in W sr^-1 m^-3."""
    return 2 * H * C**2 / wavelength**5 / np.expm1(H * C / (wavelength * K * temperature))


def main(row):
    t = row["temperature_k"]
    radius = row["radius_sun"] * R_SUN
    wavelengths = np.geomspace(10e-9, 1e-3, 20_000)
    exitance = np.pi * np.trapezoid(planck(wavelengths, t), wavelengths)  # W/m^2, the numeric integral
    luminosity = 4 * np.pi * radius**2 * exitance
    visible = {band: float(np.trapezoid(planck(w := np.linspace(lo, hi, 500), t), w)) for band, (lo, hi) in BANDS.items()}
    flux = luminosity / (4 * np.pi * (row["distance_pc"] * PARSEC) ** 2)
    return {
        "star": row["name"],
        "peak_nm": round(float(wavelengths[np.argmax(planck(wavelengths, t))]) * 1e9, 1),
        "luminosity_sun": round(float(luminosity / L_SUN), 4),
        "stefan_boltzmann_check": round(float(exitance / (SIGMA * t**4)), 6),
        "b_minus_v": round(float(-2.5 * np.log10(visible["B"] / visible["V"])), 3),
        "flux_w_m2": float(f"{flux:.4g}"),
    }
