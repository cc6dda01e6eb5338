// Runs an Elasticsearch query_string (Lucene syntax) over documents with Apache Lucene's
// classic QueryParser and MemoryIndex, as Elasticsearch evaluates it on fields of the
// mapping's types: keyword fields indexed untokenized and matched case-sensitively; text
// fields analysed with the standard analyzer (Elasticsearch's default: standard tokenizer and
// lowercase, no stop words), at index and at query time; long fields as numbers (term and
// range queries compare numerically); ip fields as addresses (a term is an address or a CIDR
// range, Elasticsearch's ip field query). `_exists_:f` is a term on the names of the fields a
// document has (Elasticsearch's _field_names), and so is `f:*` (Elasticsearch's query_string
// turns a lone * into an exists query), and a boolean group with only negative clauses
// gets a match-all clause added (Elasticsearch's Queries.fixNegativeQueryIfNeeded, applied by
// its query_string parser to every group).
//
// usage: java -cp <lucene core, queryparser, memory, misc jars> LuceneMatch.java QUERY_FILE TYPES_FILE < DOCS
// TYPES_FILE: one `field TAB type` line for each field that is not a keyword (type: text,
// long or ip). DOCS: one document per line: id, then field TAB value pairs, all TAB-separated, with
// backslash, tab, line feed and carriage return escaped as \\ \t \n \r. Prints the ids of the
// documents that match.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.core.KeywordAnalyzer;
import org.apache.lucene.analysis.miscellaneous.PerFieldAnalyzerWrapper;
import org.apache.lucene.analysis.standard.StandardAnalyzer;
import java.net.InetAddress;
import org.apache.lucene.document.InetAddressPoint;
import org.apache.lucene.document.LongPoint;
import org.apache.lucene.index.memory.MemoryIndex;
import org.apache.lucene.queryparser.classic.ParseException;
import org.apache.lucene.queryparser.classic.QueryParser;
import org.apache.lucene.search.BooleanClause;
import org.apache.lucene.search.BooleanQuery;
import org.apache.lucene.search.MatchAllDocsQuery;
import org.apache.lucene.search.MatchNoDocsQuery;
import org.apache.lucene.search.Query;
import org.apache.lucene.search.TermQuery;
import org.apache.lucene.index.Term;

public class LuceneMatch {
    static final java.util.regex.Pattern LITERAL_ADDRESS = java.util.regex.Pattern.compile("[0-9A-Fa-f:.]+");

    static class ElasticsearchLikeParser extends QueryParser {
        final Map<String, String> types;

        ElasticsearchLikeParser(Analyzer analyzer, Map<String, String> types) {
            super("_all", analyzer);
            this.types = types;
            setAllowLeadingWildcard(true);
        }

        boolean isLong(String field) {
            return "long".equals(types.get(field));
        }

        static Long number(String text) {
            try {
                return Long.parseLong(text);
            } catch (NumberFormatException e) {
                return null;
            }
        }

        @Override
        protected Query getFieldQuery(String field, String text, boolean quoted) throws ParseException {
            if (!quoted && text.length() > 1 && (text.charAt(0) == '>' || text.charAt(0) == '<')) {
                // Elasticsearch's query_string extension (QueryStringQueryParser.getFieldQuery):
                // f:>v, f:>=v, f:<v, f:<=v are open-ended ranges, escaped or not.
                boolean inclusive = text.length() > 2 && text.charAt(1) == '=';
                String bound = text.substring(inclusive ? 2 : 1);
                return text.charAt(0) == '>'
                        ? getRangeQuery(field, bound, null, inclusive, true)
                        : getRangeQuery(field, null, bound, true, inclusive);
            }
            if ("ip".equals(types.get(field))) {  // an address, or a CIDR range
                try {
                    int slash = text.indexOf('/');
                    String literal = slash < 0 ? text : text.substring(0, slash);
                    if (!LITERAL_ADDRESS.matcher(literal).matches()) {
                        throw new NumberFormatException(literal);
                    }
                    InetAddress address = InetAddress.getByName(literal);
                    return slash < 0
                            ? InetAddressPoint.newExactQuery(field, address)
                            : InetAddressPoint.newPrefixQuery(field, address, Integer.parseInt(text.substring(slash + 1)));
                } catch (java.io.IOException | NumberFormatException e) {
                    throw new ParseException("not an ip or CIDR range for ip field " + field + ": " + text);
                }
            }
            if (isLong(field)) {  // a term on a long field is an exact numeric query
                Long value = number(text);
                if (value == null) {  // Elasticsearch fails the query (number_format_exception)
                    throw new ParseException("not a number for long field " + field + ": " + text);
                }
                return LongPoint.newExactQuery(field, value);
            }
            return super.getFieldQuery(field, text, quoted);
        }

        @Override
        protected Query getWildcardQuery(String field, String termStr) throws ParseException {
            if ("*".equals(termStr) && !"_exists_".equals(field)) {  // f:* is exists
                return new TermQuery(new Term("_exists_", field));
            }
            return super.getWildcardQuery(field, termStr);
        }

        @Override
        protected Query getRangeQuery(String field, String lo, String hi, boolean loInc, boolean hiInc)
                throws ParseException {
            if (isLong(field)) {
                long low = lo == null || "*".equals(lo) ? Long.MIN_VALUE : Long.parseLong(lo);
                long high = hi == null || "*".equals(hi) ? Long.MAX_VALUE : Long.parseLong(hi);
                if (!loInc) low = low == Long.MAX_VALUE ? low : low + 1;
                if (!hiInc) high = high == Long.MIN_VALUE ? high : high - 1;
                return low > high ? new MatchNoDocsQuery() : LongPoint.newRangeQuery(field, low, high);
            }
            return super.getRangeQuery(field, lo, hi, loInc, hiInc);
        }

        @Override
        protected Query getBooleanQuery(List<BooleanClause> clauses) throws ParseException {
            Query query = super.getBooleanQuery(clauses);
            if (!(query instanceof BooleanQuery)) {
                return query;
            }
            BooleanQuery bool = (BooleanQuery) query;
            for (BooleanClause clause : bool.clauses()) {
                if (!clause.isProhibited()) {
                    return query;
                }
            }
            BooleanQuery.Builder fixed = new BooleanQuery.Builder();
            for (BooleanClause clause : bool.clauses()) {
                fixed.add(clause);
            }
            fixed.add(new MatchAllDocsQuery(), BooleanClause.Occur.FILTER);
            return fixed.build();
        }
    }

    static String unescape(String s) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                char n = s.charAt(++i);
                out.append(n == 't' ? '\t' : n == 'n' ? '\n' : n == 'r' ? '\r' : n);
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    public static void main(String[] args) throws Exception {
        Analyzer keyword = new KeywordAnalyzer();
        Map<String, String> types = new HashMap<>();
        Map<String, Analyzer> analyzers = new HashMap<>();
        for (String line : Files.readAllLines(Path.of(args[1]), StandardCharsets.UTF_8)) {
            if (line.isEmpty()) {
                continue;
            }
            String[] cells = line.split("\t", -1);
            String field = unescape(cells[0]);
            types.put(field, cells[1]);
            if ("text".equals(cells[1])) {
                analyzers.put(field, new StandardAnalyzer());
            }
        }
        Analyzer analyzer = new PerFieldAnalyzerWrapper(keyword, analyzers);
        String text = Files.readString(Path.of(args[0]), StandardCharsets.UTF_8).strip();
        // MemoryIndex tells a match by a positive score; a query of filter clauses only scores
        // 0, so a match-all SHOULD clause gives every match a score.
        Query query = new BooleanQuery.Builder()
                .add(new ElasticsearchLikeParser(analyzer, types).parse(text), BooleanClause.Occur.MUST)
                .add(new MatchAllDocsQuery(), BooleanClause.Occur.SHOULD)
                .build();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String[] cells = line.split("\t", -1);
            MemoryIndex index = new MemoryIndex();
            for (int i = 1; i + 1 < cells.length; i += 2) {
                String field = unescape(cells[i]);
                String value = unescape(cells[i + 1]);
                if ("long".equals(types.get(field))) {
                    index.addField(new LongPoint(field, Long.parseLong(value)), keyword);
                } else if ("ip".equals(types.get(field))) {
                    if (LITERAL_ADDRESS.matcher(value).matches()) {  // never a name lookup
                        index.addField(new InetAddressPoint(field, InetAddress.getByName(value)), keyword);
                    }
                } else {
                    index.addField(field, value, analyzer);
                }
            }
            if (index.search(query) > 0.0f) {
                System.out.println(unescape(cells[0]));
            }
        }
    }
}
