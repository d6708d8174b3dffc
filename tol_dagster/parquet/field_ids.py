"""The field ids of parquet.thrift, and the page types, that the byte-level code reads or sets.

Named here once so the footer reader, the splicer and the page reader agree on them; a field
not named here is carried along untouched (see `thrift.Struct`).
"""

# FileMetaData
FILE_VERSION, FILE_SCHEMA, FILE_NUM_ROWS, FILE_ROW_GROUPS = 1, 2, 3, 4
FILE_KEY_VALUE = 5
FILE_COLUMN_ORDERS = 7
FILE_ENCRYPTION = (8, 9)
# KeyValue
KV_KEY, KV_VALUE = 1, 2
# RowGroup
RG_COLUMNS, RG_TOTAL_BYTE_SIZE, RG_NUM_ROWS, RG_FILE_OFFSET, RG_ORDINAL = 1, 2, 3, 5, 7
RG_TOTAL_COMPRESSED = 6
RG_SORTING_COLUMNS = 4
# ColumnChunk
CC_FILE_PATH, CC_FILE_OFFSET, CC_META = 1, 2, 3
CC_OFFSET_INDEX, CC_OFFSET_INDEX_LENGTH, CC_COLUMN_INDEX, CC_COLUMN_INDEX_LENGTH = 4, 5, 6, 7
CC_ENCRYPTION = (8, 9)
# ColumnMetaData
CM_TYPE, CM_ENCODINGS, CM_PATH, CM_CODEC, CM_NUM_VALUES, CM_TOTAL_UNCOMPRESSED = 1, 2, 3, 4, 5, 6
CM_TOTAL_COMPRESSED, CM_KEY_VALUE, CM_DATA_PAGE, CM_INDEX_PAGE, CM_DICTIONARY_PAGE = 7, 8, 9, 10, 11
CM_STATISTICS = 12
CM_ENCODING_STATS, CM_SIZE_STATISTICS, CM_GEOSPATIAL_STATISTICS = 13, 16, 17
CM_DROPPED = (14, 15)  # bloom filter offset and length
CM_OF_ALL_ROWS = (10, 12, 13, 14, 15, 16, 17)  # statistics and indexes: wrong for a subset
# SchemaElement
SCHEMA_TYPE, SCHEMA_NAME, SCHEMA_NUM_CHILDREN = 1, 4, 5
BYTE_ARRAY = 6  # Type: strings
# OffsetIndex and PageLocation
PAGE_LOCATIONS, PAGE_OFFSET, PAGE_SIZE, PAGE_FIRST_ROW = 1, 1, 2, 3
# PageHeader
HEADER_TYPE, HEADER_UNCOMPRESSED, HEADER_COMPRESSED = 1, 2, 3
HEADER_DATA_V1, HEADER_DATA_V2 = 5, 8  # each holds num_values as field 1; v2 num_rows as 3
HEADER_DICTIONARY = 7  # DictionaryPageHeader: num_values as field 1
DATA_NUM_VALUES, DATA_V2_NUM_ROWS = 1, 3
DATA_ENCODING, DATA_DEF_ENCODING, DATA_REP_ENCODING = 2, 3, 4  # DataPageHeader (v1)
# PageType
DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3
