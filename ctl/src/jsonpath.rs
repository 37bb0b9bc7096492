//! kubectl's JSONPath template language for `-o jsonpath=…`.
