"""Image bytes to a decoded image: format sniffing, size limits and the decompression-bomb guard."""
